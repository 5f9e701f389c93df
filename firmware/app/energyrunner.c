/* The EnergyRunner / MLPerf Tiny DUT text protocol (energyrunner.h, docs/energyrunner.md),
 * written from the protocol as MLPerf Tiny's runner speaks it (benchmark/runner in
 * mlcommons/tiny): the m- reply lines its parser matches are reproduced exactly. */
#include "energyrunner.h"

#include <math.h>
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
/* Decimals of a class probability in m-results: the reference DUT's "%0.3f", or more where
 * 3 would print the top class no higher than a lower one; 12 at most, so that a float's
 * 24-bit significand times 10^12 fits 64 bits. */
#define ER_MIN_DECIMALS 3
#define ER_MAX_DECIMALS 12
/* The largest float below 1 (1 - 2^-24): the most a class below the top may score. */
#define ER_BELOW_ONE 0.99999994f

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

/* A finite float >= 0 as significand * 2^exponent. */
static uint32_t float_parts(float value, int *exponent) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  const int biased = (int)((bits >> 23) & 0xFFu);
  *exponent = biased ? biased - 150 : -149;
  return biased ? (bits & 0x7FFFFFu) | 0x800000u : bits & 0x7FFFFFu;
}

/* share / total in units of 10^-decimals, correctly rounded (halves to even) from the exact
 * quotient of the two floats, 0 <= share <= total, total >= 1. Exact, so a share below
 * another never prints above it, and with enough decimals prints below it. */
static uint64_t share_units(float share, float total, int decimals) {
  static const uint64_t ten_to[ER_MAX_DECIMALS + 1] = {
      1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u,
      1000000000u, UINT64_C(10000000000), UINT64_C(100000000000), UINT64_C(1000000000000)};
  int a, b;
  const uint64_t m_share = float_parts(share, &a);
  const uint64_t m_total = float_parts(total, &b);
  const int shift = b - a; /* >= 0: share <= total */
  /* The quotient is (t + r / m_total) / 2^shift, t < 2^41: below one half past 41. */
  if (m_share == 0 || shift > 41) {
    return 0;
  }
  const uint64_t n = m_share * ten_to[decimals]; /* < 2^24 * 10^12 < 2^64 */
  const uint64_t t = n / m_total, r = n % m_total;
  uint64_t units = t >> shift;
  int up;
  if (shift == 0) {
    up = 2 * r > m_total || (2 * r == m_total && (units & 1u));
  } else {
    const uint64_t low = t & ((UINT64_C(1) << shift) - 1), half = UINT64_C(1) << (shift - 1);
    up = low > half || (low == half && (r != 0 || (units & 1u)));
  }
  return units + (uint64_t)up;
}

static void put_units(uint64_t units, int decimals) {
  char digits[ER_MAX_DECIMALS];
  for (int i = decimals - 1; i >= 0; --i) {
    digits[i] = (char)('0' + units % 10);
    units /= 10;
  }
  put_uint(units);
  put(".");
  ob_hal_write((const uint8_t *)digits, (size_t)decimals);
}

/* "e-[" head value tail "]" */
static void put_error(const char *head, const char *value, const char *tail) {
  put("e-[");
  put(head);
  put(value);
  put(tail);
  put("]\r\n");
}

/* "e-[" head " to 999999999: " text "]", the largest count OB_ER_COUNT_DIGITS allows */
static void put_count_error(const char *head, const char *text) {
  put("e-[");
  put(head);
  put(" to ");
  for (int i = 0; i < OB_ER_COUNT_DIGITS; ++i) {
    put("9");
  }
  put(": ");
  put(text);
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

/* A decimal number of at most OB_ER_COUNT_DIGITS digits (no sign); 0 when it is not one. */
static int parse_count(const char *text, size_t *value) {
  size_t v = 0, n = 0;
  for (; text[n] != '\0'; ++n) {
    if (text[n] < '0' || text[n] > '9' || n == OB_ER_COUNT_DIGITS) {
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

/* exp(x - x_top) of a class with int8 output q, top the largest output: 1 for the top
 * classes, less for every other, even where the scale is so small that expf rounds to 1. */
static float class_share(int8_t q, int8_t top) {
  if (q == top) {
    return 1.0f;
  }
  const float e = expf(ob_model.output_scale * (float)((int32_t)q - top));
  return e < ER_BELOW_ONE ? e : ER_BELOW_ONE;
}

/* MLPerf Tiny's runner divides each results vector by its sum and takes its argmax as the
 * top-1; the reference DUT's graph ends in a softmax, ours at the logits. So the line holds
 * the softmax of the dequantized output, from exp(x - x_top): the sum is >= 1 (the top
 * term is exp(0)), nothing divides by zero, and the order of the int8 outputs is kept:
 * classes with equal outputs print equal (the runner's argmax then takes the lowest index,
 * as numpy's does on the int8 output), a lower output prints lower (see ER_MIN_DECIMALS).
 * A single output is a score, not a class (anomaly detection; the runner does not
 * normalise it): printed dequantized, as the reference DUT prints it. */
static void results(void) {
  const int8_t *output = (const int8_t *)db + ob_model.input_bytes;
  const size_t count = ob_model.output_bytes;
  put("m-results-[");
  if (count == 1) {
    put_fixed3((float)((int32_t)output[0] - ob_model.output_zero_point) * ob_model.output_scale);
    put("]\r\n");
    return;
  }
  int8_t top = output[0];
  for (size_t i = 1; i < count; ++i) {
    top = output[i] > top ? output[i] : top;
  }
  float total = 0.0f;
  float next = -1.0f; /* the largest share below the top's; none when all outputs are equal */
  for (size_t i = 0; i < count; ++i) {
    const float share = class_share(output[i], top);
    total += share;
    if (output[i] != top && share > next) {
      next = share;
    }
  }
  int decimals = ER_MIN_DECIMALS;
  for (; decimals < ER_MAX_DECIMALS; ++decimals) {
    const uint64_t top_units = share_units(1.0f, total, decimals);
    if (top_units > 0 && (next < 0.0f || top_units > share_units(next, total, decimals))) {
      break;
    }
  }
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) {
      put(",");
    }
    put_units(share_units(class_share(output[i], top), total, decimals), decimals);
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

/* Whether the host asked a running infer to stop: a printable byte arrived (it is taken,
 * so it starts no command). Other bytes are taken and ignored, as the parser ignores them
 * between commands: the line break a terminal sends after the '%'. */
static int stop_requested(void) {
  while (ob_hal_byte_waiting()) {
    const uint8_t byte = ob_hal_read_byte();
    if (byte >= 0x20 && byte <= 0x7E) {
      return 1;
    }
  }
  return 0;
}

/* Runs `count` inferences unless the host stops them; the number run. */
static size_t invoke_times(size_t count, ob_status *status) {
  size_t i = 0;
  for (; i < count && *status == OB_OK && !stop_requested(); ++i) {
    *status = ob_model_invoke((const int8_t *)db, (int8_t *)db + ob_model.input_bytes);
  }
  return i;
}

static void put_stopped(size_t done, size_t count, const char *what) {
  put("e-[Inference stopped by the host after ");
  put_uint(done);
  put(" of ");
  put_uint(count);
  put(what);
  put("]\r\n");
}

/* Runs the model on the db bytes: W untimed warmups, then N timed inferences between two
 * timestamps, then the results, in the reference DUT's order. */
static void infer(const char *count, const char *warmup_count) {
  size_t n = 1, warmups = ER_DEFAULT_WARMUPS;
  if (count != NULL && (!parse_count(count, &n) || n == 0)) {
    put_count_error("Inference iterations must be 1", count);
    return;
  }
  if (warmup_count != NULL && !parse_count(warmup_count, &warmups)) {
    put_count_error("Inference warmup must be 0", warmup_count);
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
  ob_status status = OB_OK;
  have_results = 0;

  put("m-warmup-start-");
  put_uint(warmups);
  put("\r\n");
  size_t done = invoke_times(warmups, &status);
  if (status == OB_OK && done < warmups) {
    put_stopped(done, warmups, " warmups");
    return;
  }
  if (status == OB_OK) {
    put("m-warmup-done\r\nm-infer-start-");
    put_uint(n);
    put("\r\n");
    /* Both readings are printed after the loop: nothing else is printed in between, so
     * the lines come in the same order and the serial output is not timed. */
    const uint64_t start = ob_hal_counter();
    done = invoke_times(n, &status);
    const uint64_t end = ob_hal_counter();
    if (status == OB_OK && done < n) {
      put_stopped(done, n, " timed inferences");
      return;
    }
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
      "infer N [W=10]: Run N timed inferences after W warmups, print results;\r\n"
      "               a character sent meanwhile stops it\r\n"
      "results      : Print the last output as class probabilities\r\n");
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
  put(OB_ER_READY "\r\n");
}

/* --- entry points ------------------------------------------------------------------ */

void ob_er_begin(uint8_t *buffer, size_t capacity) {
  db = buffer;
  db_capacity = capacity;
  if (ob_hal_host_attached()) {
    put("m-timestamp-mode-performance\r\n");
    put_timestamp(ob_hal_counter());
    put(OB_ER_BOOT_DONE "\r\n");
  }
}

void ob_er_byte(uint8_t byte) {
  if (byte == '%') {
    if (line_overflow) {
      put("e-[Command longer than ");
      put_uint(OB_ER_LINE_MAX);
      put(" characters]\r\n" OB_ER_READY "\r\n");
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
