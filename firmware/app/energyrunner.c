/* The EnergyRunner / MLPerf Tiny DUT text protocol (energyrunner.h, docs/energyrunner.md),
 * written from the protocol as MLPerf Tiny's runner speaks it (benchmark/runner in
 * mlcommons/tiny): the m- reply lines its parser matches are reproduced exactly. */
#include "energyrunner.h"

#include <string.h>

#include "hal.h"
#include "model.h"

/* The runner picks its test script and data set by this name (ic01, kws01, vww01, ad01);
 * set it with -D OB_ER_MODEL=\"kws01\". CIFAR-10 image classification is ic01. */
#ifndef OB_ER_MODEL
#define OB_ER_MODEL "ic01"
#endif

/* The benchmark profile EEMBC's and MLPerf's hosts expect from a ULPMark-ML firmware. */
#define ER_PROFILE "ULPMark for tinyML Firmware V0.0.1"
/* `infer N` without W runs this many warmups, as the reference DUT does. */
#define ER_DEFAULT_WARMUPS 10

static char line[OB_ER_LINE_MAX + 1];
static size_t line_length;
static int line_overflow;

static uint8_t *db;        /* the app's buffer: input at 0, output after the model's input */
static size_t db_capacity;
static size_t db_size;     /* N of the last `db load N`; 0: none since boot or the last frame */
static size_t db_loaded;   /* bytes received since then */
static int have_results;   /* the output after the input holds the last inference's */

/* --- output ------------------------------------------------------------------------ */

static void put(const char *text) { ob_hal_write((const uint8_t *)text, strlen(text)); }

static void put_uint(uint64_t value) {
  char digits[21];
  size_t i = sizeof digits;
  do {
    digits[--i] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  ob_hal_write((const uint8_t *)&digits[i], sizeof digits - i);
}

static void put_hex_byte(uint8_t byte) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t text[2] = {(uint8_t)hex[byte >> 4], (uint8_t)hex[byte & 0xFu]};
  ob_hal_write(text, 2);
}

/* value as printf's "%0.3f" prints it (the reference DUT's format): correctly rounded,
 * halves to even, from the float's exact binary value. Integer arithmetic on the bits
 * (value = m * 2^e, so value * 1000 = m * 1000 * 2^e exactly), so no printf float
 * support and no double emulation is linked. |value| >= 2^53 (no int8 output times a
 * sane scale gets there) prints "ovf". */
static void put_fixed3(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  const int negative = (int)(bits >> 31);
  const int biased = (int)((bits >> 23) & 0xFFu);
  const uint32_t fraction = bits & 0x7FFFFFu;
  if (biased == 0xFF) {
    put(fraction ? "nan" : negative ? "-inf" : "inf");
    return;
  }
  const uint64_t m1000 = (uint64_t)(biased ? fraction | 0x800000u : fraction) * 1000u; /* < 2^34 */
  const int e = biased ? biased - 150 : -149;
  uint64_t thousandths;
  if (e >= 0) {
    if (e > 29) {
      put("ovf");
      return;
    }
    thousandths = m1000 << e;
  } else if (-e >= 64) {
    thousandths = 0; /* below half a thousandth */
  } else {
    const int s = -e;
    const uint64_t rest = m1000 & ((UINT64_C(1) << s) - 1);
    const uint64_t half = UINT64_C(1) << (s - 1);
    thousandths = m1000 >> s;
    if (rest > half || (rest == half && (thousandths & 1u))) {
      ++thousandths;
    }
  }
  if (negative) {
    put("-");
  }
  put_uint(thousandths / 1000u);
  const unsigned frac = (unsigned)(thousandths % 1000u);
  const uint8_t text[4] = {'.', (uint8_t)('0' + frac / 100), (uint8_t)('0' + frac / 10 % 10),
                           (uint8_t)('0' + frac % 10)};
  ob_hal_write(text, sizeof text);
}

/* "e-[" head value tail "]" */
static void put_error(const char *head, const char *value, const char *tail) {
  put("e-[");
  put(head);
  put(value);
  put(tail);
  put("]\r\n");
}

/* --- timing ------------------------------------------------------------------------ */

/* The HAL counter in microseconds at the board's clock: cycles (real boards) or
 * instructions (QEMU -icount; one instruction counted as one cycle) over F_CPU. */
static uint64_t counter_us(uint64_t count) {
  const uint64_t hz = (uint64_t)(F_CPU);
  if (hz == 0 || strcmp(ob_hal_counter_unit(), "microseconds") == 0) {
    return count;
  }
  return count / hz * 1000000u + count % hz * 1000000u / hz;
}

static void put_timestamp(uint64_t count) {
  put("m-lap-us-");
  put_uint(counter_us(count));
  put("\r\n");
}

/* --- commands ---------------------------------------------------------------------- */

/* A decimal number of at most 9 digits (no sign); 0 when it is not one. */
static int parse_count(const char *text, size_t *value) {
  size_t v = 0, n = 0;
  for (; text[n] != '\0'; ++n) {
    if (text[n] < '0' || text[n] > '9' || n == 9) {
      return 0;
    }
    v = v * 10 + (size_t)(text[n] - '0');
  }
  *value = v;
  return n > 0;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static void results(void) {
  const int8_t *output = (const int8_t *)db + ob_model.input_bytes;
  put("m-results-[");
  for (size_t i = 0; i < ob_model.output_bytes; ++i) {
    if (i > 0) {
      put(",");
    }
    put_fixed3((float)((int32_t)output[i] - ob_model.output_zero_point) * ob_model.output_scale);
  }
  put("]\r\n");
}

static void db_load(const char *count) {
  size_t n;
  if (count == NULL) {
    put("e-[Command 'db load' requires the # of bytes]\r\n");
  } else if (!parse_count(count, &n) || n == 0) {
    put_error("Command 'db load' must be >0 bytes: ", count, "");
  } else if (n > db_capacity) {
    put("e-[Supplied buffer size ");
    put_uint(n);
    put(" exceeds maximum of ");
    put_uint(db_capacity);
    put("]\r\n");
  } else {
    db_size = n;
    db_loaded = 0;
    have_results = 0;
    put("m-[Expecting ");
    put_uint(n);
    put(" bytes]\r\n");
  }
}

/* Appends the bytes of hex; digits beyond the loaded size are ignored, as the reference
 * does. The whole chunk is checked before any byte is stored. */
static void db_hex(const char *hex) {
  const size_t digits = strlen(hex);
  if (db_size == 0) {
    put("e-[Command 'db' needs 'db load N' first]\r\n");
    return;
  }
  if (db_loaded == db_size) {
    put("e-[All bytes of 'db load' are loaded already]\r\n");
    return;
  }
  if (digits % 2 != 0) {
    put("e-[Insufficient number of hex digits]\r\n");
    return;
  }
  for (size_t i = 0; i < digits; ++i) {
    if (hex_digit(hex[i]) < 0) {
      const char pair[3] = {hex[i & ~(size_t)1], hex[i | 1], '\0'};
      put_error("Invalid hex digit '", pair, "'");
      return;
    }
  }
  have_results = 0;
  for (size_t i = 0; i < digits && db_loaded < db_size; i += 2) {
    db[db_loaded++] = (uint8_t)(hex_digit(hex[i]) << 4 | hex_digit(hex[i + 1]));
  }
  if (db_loaded == db_size) {
    put("m-load-done\r\n");
  }
}

static void db_print(void) {
  for (size_t i = 0; i < db_loaded; ++i) {
    put(i % 8 == 0 ? "m-buffer-" : "-");
    put_hex_byte(db[i]);
    if (i % 8 == 7 || i + 1 == db_loaded) {
      put("\r\n");
    }
  }
}

static void db_command(const char *sub, const char *arg) {
  if (sub == NULL) {
    put("e-[Command 'db' requires a subcommand]\r\n");
  } else if (strcmp(sub, "load") == 0) {
    db_load(arg);
  } else if (strcmp(sub, "print") == 0) {
    db_print();
  } else {
    db_hex(sub);
  }
}

/* Runs the model on the db bytes: W untimed warmups, then N timed inferences between two
 * timestamps, then the results, in the reference DUT's order. */
static void infer(const char *count, const char *warmup_count) {
  size_t n = 1, warmups = ER_DEFAULT_WARMUPS;
  if (count != NULL && (!parse_count(count, &n) || n == 0)) {
    put_error("Inference iterations must be >0: ", count, "");
    return;
  }
  if (warmup_count != NULL && !parse_count(warmup_count, &warmups)) {
    put_error("Inference warmup must be >=0: ", warmup_count, "");
    return;
  }
  if (db_size != ob_model.input_bytes || db_loaded != db_size) {
    put("e-[Input db has ");
    put_uint(db_loaded);
    put(" bytes, expected ");
    put_uint(ob_model.input_bytes);
    put("]\r\n");
    return;
  }
  if (ob_model.input_bytes + ob_model.output_bytes > db_capacity) {
    put("e-[Input and output exceed OB_APP_MAX_PAYLOAD]\r\n");
    return;
  }
  const int8_t *input = (const int8_t *)db;
  int8_t *output = (int8_t *)db + ob_model.input_bytes;
  ob_status status = OB_OK;
  have_results = 0;

  put("m-warmup-start-");
  put_uint(warmups);
  put("\r\n");
  for (size_t i = 0; i < warmups && status == OB_OK; ++i) {
    status = ob_model_invoke(input, output);
  }
  if (status == OB_OK) {
    put("m-warmup-done\r\nm-infer-start-");
    put_uint(n);
    put("\r\n");
    /* Both readings are printed after the loop: nothing else is printed in between, so
     * the lines come in the same order and the serial output is not timed. */
    const uint64_t start = ob_hal_counter();
    for (size_t i = 0; i < n && status == OB_OK; ++i) {
      status = ob_model_invoke(input, output);
    }
    const uint64_t end = ob_hal_counter();
    if (status == OB_OK) {
      put_timestamp(start);
      put_timestamp(end);
      put("m-infer-done\r\n");
      have_results = 1;
      results();
    }
  }
  if (status != OB_OK) {
    put_error("Inference failed: ", ob_status_str(status), "");
  }
}

static void help(void) {
  put(ER_PROFILE "\r\n\r\n"
      "help         : Print this information\r\n"
      "name         : Print the name of the device\r\n"
      "timestamp    : Print a timestamp (m-lap-us-N)\r\n"
      "profile      : Print the benchmark profile and model\r\n"
      "db SUBCMD    : Manipulate the input tensor buffer\r\n"
      "  load N     : Expect N bytes (the model's int8 input tensor)\r\n"
      "  HH[HH]*    : Load 8-bit hex byte(s) until N bytes\r\n"
      "  print      : Print the loaded bytes as hex\r\n"
      "infer N [W=10]: Run N timed inferences after W warmups, print results\r\n"
      "results      : Print the last output, dequantized\r\n");
}

static void run_command(void) {
  /* Split on spaces in place: at most a command and two arguments matter. */
  char *token[3] = {NULL, NULL, NULL};
  size_t count = 0;
  for (char *p = line; *p != '\0' && count < 3;) {
    while (*p == ' ') *p++ = '\0';
    if (*p == '\0') break;
    token[count++] = p;
    while (*p != ' ' && *p != '\0') ++p;
  }
  const char *command = token[0];
  if (command == NULL) {
    /* An empty command: hosts send a lone '%' to flush a half-sent one. */
  } else if (strcmp(command, "name") == 0) {
    put("m-name-dut-[mcu-onebit-" OB_BOARD "]\r\n");
  } else if (strcmp(command, "profile") == 0) {
    put("m-profile-[" ER_PROFILE "]\r\nm-model-[" OB_ER_MODEL "]\r\n");
  } else if (strcmp(command, "help") == 0) {
    help();
  } else if (strcmp(command, "timestamp") == 0) {
    put_timestamp(ob_hal_counter());
  } else if (strcmp(command, "db") == 0) {
    db_command(token[1], token[2]);
  } else if (strcmp(command, "infer") == 0) {
    infer(token[1], token[2]);
  } else if (strcmp(command, "results") == 0) {
    if (have_results) {
      results();
    } else {
      put("e-[No results: run 'infer' first]\r\n");
    }
  } else {
    put_error("Unknown command: ", command, "");
  }
  put("m-ready\r\n");
}

/* --- entry points ------------------------------------------------------------------ */

void ob_er_begin(uint8_t *buffer, size_t capacity) {
  db = buffer;
  db_capacity = capacity;
  put("m-timestamp-mode-performance\r\n");
  put_timestamp(ob_hal_counter());
  put("m-init-done\r\nm-ready\r\n");
}

void ob_er_byte(uint8_t byte) {
  if (byte == '%') {
    if (line_overflow) {
      put("e-[Command longer than ");
      put_uint(OB_ER_LINE_MAX);
      put(" characters]\r\nm-ready\r\n");
    } else {
      line[line_length] = '\0';
      run_command();
    }
    line_length = 0;
    line_overflow = 0;
  } else if (byte < 0x20 || byte > 0x7E) {
    /* Line breaks, or binary noise around frames: a line mixed with it is no command. */
    line_length = 0;
    line_overflow = 0;
  } else if (line_length < OB_ER_LINE_MAX) {
    line[line_length++] = (char)byte;
  } else {
    line_overflow = 1;
  }
}

void ob_er_frame_seen(void) {
  line_length = 0;
  line_overflow = 0;
  db_size = 0;
  db_loaded = 0;
  have_results = 0;
}
