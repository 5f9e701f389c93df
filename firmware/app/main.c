/* The on-device program: answer IDENTIFY and INFER requests over the serial link
 * (docs/serial_protocol.md), and the EnergyRunner text commands sent between frames
 * (energyrunner.h, docs/energyrunner.md). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "energyrunner.h"
#include "hal.h"
#include "model.h"
#include "protocol.h"
#include "serial_frames.h"

/* Request payloads, identify replies, inference outputs and the text protocol's input
 * and output share one static buffer. `convert` sizes it for its model (the larger of
 * input + output bytes and the identity object, see OB_PROTO_IDENTITY_FIXED_MAX) with
 * -DOB_APP_MAX_PAYLOAD; 16 KiB serves builds without a model of their own (the tests'). */
#ifndef OB_APP_MAX_PAYLOAD
#define OB_APP_MAX_PAYLOAD 16384
#endif
#if OB_APP_MAX_PAYLOAD > 65535
#error "OB_APP_MAX_PAYLOAD must fit the protocol's 16-bit length"
#endif


static uint8_t buffer[OB_APP_MAX_PAYLOAD];

typedef struct {
  char *text;
  size_t length;
  size_t capacity;
  int overflow;
} text_builder;

static void put_text(text_builder *b, const char *text) {
  size_t n = strlen(text);
  if (b->length + n > b->capacity) {
    b->overflow = 1;
    return;
  }
  memcpy(b->text + b->length, text, n);
  b->length += n;
}

static void put_uint(text_builder *b, uint64_t value) {
  char digits[21];
  size_t i = sizeof digits;
  digits[--i] = '\0';
  do {
    digits[--i] = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  put_text(b, &digits[i]);
}

/* Why a request of this type cannot carry this many payload bytes; NULL when it can. An
 * unknown type is read whole: its CRC tells a type the link damaged (retried) from one
 * this firmware lacks. */
static const char *length_error(uint8_t type, uint16_t length) {
  if (length > sizeof buffer) {
    return "frame longer than OB_APP_MAX_PAYLOAD";
  }
  switch (type) {
    case OB_PROTO_IDENTIFY:
      return length == 0 || length == OB_PROTO_IDENTIFY_QUERY_BYTES
                 ? NULL
                 : "IDENTIFY payload is empty or offset:u16 count:u16";
    case OB_PROTO_INFER:
      return length == ob_model.input_bytes ? NULL : "input length differs from the model's input_bytes";
    default:
      return NULL;
  }
}

/* ob_frame_length_ok: asked on the header, before the payload is read. */
static int request_length_ok(uint8_t type, uint16_t length) {
  return length_error(type, length) == NULL;
}

static void identify(uint8_t seq, size_t length) {
  /* Read the slice before the identity is written over the request in buffer. */
  size_t offset = 0, count = SIZE_MAX;
  if (length == OB_PROTO_IDENTIFY_QUERY_BYTES) {
    offset = (size_t)buffer[0] | (size_t)buffer[1] << 8;
    count = (size_t)buffer[2] | (size_t)buffer[3] << 8;
  }
  text_builder b = {(char *)buffer, 0, sizeof buffer, 0};
  put_text(&b, "{\"protocol\":");
  put_uint(&b, OB_PROTO_VERSION);
  put_text(&b, ",\"board\":\"" OB_BOARD "\",\"clock_hz\":");
  put_uint(&b, (uint64_t)(F_CPU));
  put_text(&b, ",\"counter\":\"");
  put_text(&b, ob_hal_counter_unit());
  put_text(&b, "\",\"max_payload\":");
  put_uint(&b, OB_APP_MAX_PAYLOAD);
  put_text(&b, ",\"input_bytes\":");
  put_uint(&b, ob_model.input_bytes);
  put_text(&b, ",\"output_bytes\":");
  put_uint(&b, ob_model.output_bytes);
  put_text(&b, ",\"arena_bytes\":");
  put_uint(&b, ob_model.arena_bytes);
  put_text(&b, ",\"model\":");
  put_text(&b, ob_model.identity);
  put_text(&b, "}");
  if (b.overflow) {
    ob_frame_send_error(seq, OB_PROTO_ERR_LENGTH, "identity longer than OB_APP_MAX_PAYLOAD");
    return;
  }
  if (offset > b.length) {
    offset = b.length;
  }
  if (count > b.length - offset) {
    count = b.length - offset;
  }
  ob_frame_send(OB_PROTO_IDENTIFY | OB_PROTO_RESPONSE, seq, buffer + offset, (uint16_t)count);
}

static void infer(uint8_t seq) {
  if (ob_model.input_bytes + ob_model.output_bytes > sizeof buffer) {
    ob_frame_send_error(seq, OB_PROTO_ERR_LENGTH, "input and output exceed OB_APP_MAX_PAYLOAD");
    return;
  }
  const int8_t *input = (const int8_t *)buffer;
  int8_t *output = (int8_t *)buffer + ob_model.input_bytes;

  uint64_t start = ob_hal_counter();
  ob_status status = ob_model_invoke(input, output);
  uint64_t count = ob_hal_counter() - start;
  if (status != OB_OK) {
    ob_frame_send_error(seq, OB_PROTO_ERR_INVOKE, ob_status_str(status));
    return;
  }

  uint8_t count_le[8];
  for (int i = 0; i < 8; ++i) {
    count_le[i] = (uint8_t)(count >> (8 * i));
  }
  ob_frame_writer writer;
  ob_frame_begin(&writer, OB_PROTO_INFER | OB_PROTO_RESPONSE, seq,
                 (uint16_t)(sizeof count_le + ob_model.output_bytes));
  ob_frame_append(&writer, count_le, sizeof count_le);
  ob_frame_append(&writer, (const uint8_t *)output, ob_model.output_bytes);
  ob_frame_end(&writer);
}

void ob_app_run(void) {
  ob_hal_init();
  ob_er_begin(buffer, sizeof buffer);
  for (;;) {
    ob_frame_header header;
    const ob_frame_status received =
        ob_frame_receive(&header, buffer, sizeof buffer, ob_er_byte, request_length_ok);
    ob_er_frame_seen();
    switch (received) {
      case OB_FRAME_BAD_LENGTH:
        ob_frame_send_error(header.seq, OB_PROTO_ERR_LENGTH, length_error(header.type, header.length));
        continue;
      case OB_FRAME_BAD_CRC:
        ob_frame_send_error(header.seq, OB_PROTO_ERR_CRC, "CRC mismatch");
        continue;
      case OB_FRAME_OK:
        break;
    }
    switch (header.type) {
      case OB_PROTO_IDENTIFY:
        identify(header.seq, header.length);
        break;
      case OB_PROTO_INFER:
        infer(header.seq);
        break;
      default:
        ob_frame_send_error(header.seq, OB_PROTO_ERR_UNKNOWN_TYPE, "unknown request type");
        break;
    }
  }
}
