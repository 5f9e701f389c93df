/* Frame reception with resynchronisation, and frame writing (serial_frames.h). */
#include <string.h>

#include "hal.h"
#include "protocol.h"
#include "serial_frames.h"

uint16_t ob_crc16(uint16_t crc, const uint8_t *data, size_t length) {
  for (size_t i = 0; i < length; ++i) {
    crc ^= (uint16_t)(data[i] << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
  }
  return crc;
}

static void wait_for_sync(ob_frame_other_byte other) {
  uint8_t byte = ob_hal_read_byte();
  for (;;) {
    while (byte != OB_PROTO_SYNC0) {
      if (other != NULL) other(byte);
      byte = ob_hal_read_byte();
    }
    byte = ob_hal_read_byte();
    if (byte == OB_PROTO_SYNC1) {
      return;
    }
    /* That SYNC0 started no frame, so it was an outside byte; the byte after it may
     * itself be a SYNC0, so it is examined again. */
    if (other != NULL) other(OB_PROTO_SYNC0);
  }
}

ob_frame_status ob_frame_receive(ob_frame_header *header, uint8_t *payload, size_t capacity,
                                 ob_frame_other_byte other, ob_frame_length_ok length_ok) {
  wait_for_sync(other);
  uint8_t head[OB_PROTO_HEADER_BYTES - 2];
  for (size_t i = 0; i < sizeof head; ++i) {
    head[i] = ob_hal_read_byte();
  }
  header->type = head[0];
  header->seq = head[1];
  header->length = (uint16_t)(head[2] | (head[3] << 8));
  /* Not draining a refused payload: a corrupted length would otherwise swallow the
   * host's retries. Its bytes are scanned for the next sync pair instead. */
  if (header->length > capacity || (length_ok != NULL && !length_ok(header->type, header->length))) {
    return OB_FRAME_BAD_LENGTH;
  }
  for (size_t i = 0; i < header->length; ++i) {
    payload[i] = ob_hal_read_byte();
  }
  uint16_t received = ob_hal_read_byte();
  received |= (uint16_t)(ob_hal_read_byte() << 8);
  uint16_t crc = ob_crc16(OB_PROTO_CRC_INIT, head, sizeof head);
  crc = ob_crc16(crc, payload, header->length);
  return crc == received ? OB_FRAME_OK : OB_FRAME_BAD_CRC;
}

void ob_frame_begin(ob_frame_writer *writer, uint8_t type, uint8_t seq, uint16_t length) {
  const uint8_t sync[2] = {OB_PROTO_SYNC0, OB_PROTO_SYNC1};
  const uint8_t head[4] = {type, seq, (uint8_t)(length & 0xFFu), (uint8_t)(length >> 8)};
  ob_hal_write(sync, sizeof sync);
  writer->crc = OB_PROTO_CRC_INIT;
  ob_frame_append(writer, head, sizeof head);
}

void ob_frame_append(ob_frame_writer *writer, const uint8_t *data, size_t length) {
  writer->crc = ob_crc16(writer->crc, data, length);
  ob_hal_write(data, length);
}

void ob_frame_end(ob_frame_writer *writer) {
  const uint8_t crc[2] = {(uint8_t)(writer->crc & 0xFFu), (uint8_t)(writer->crc >> 8)};
  ob_hal_write(crc, sizeof crc);
}

void ob_frame_send(uint8_t type, uint8_t seq, const uint8_t *payload, uint16_t length) {
  ob_frame_writer writer;
  ob_frame_begin(&writer, type, seq, length);
  ob_frame_append(&writer, payload, length);
  ob_frame_end(&writer);
}

void ob_frame_send_error(uint8_t seq, uint8_t code, const char *message) {
  size_t length = strlen(message);
  ob_frame_writer writer;
  ob_frame_begin(&writer, OB_PROTO_ERROR, seq, (uint16_t)(1 + length));
  ob_frame_append(&writer, &code, 1);
  ob_frame_append(&writer, (const uint8_t *)message, length);
  ob_frame_end(&writer);
}
