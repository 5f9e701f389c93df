/* Frames of the serial protocol (format and constants: protocol.h) over the HAL's
 * byte link. */
#ifndef OB_SERIAL_FRAMES_H
#define OB_SERIAL_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  uint8_t type;
  uint8_t seq;
  uint16_t length; /* payload bytes */
} ob_frame_header;

typedef enum {
  OB_FRAME_OK = 0,
  OB_FRAME_BAD_CRC,    /* payload read, CRC mismatch */
  OB_FRAME_BAD_LENGTH, /* length refused (see ob_frame_length_ok); the payload was not read */
} ob_frame_status;

/* CRC-16/CCITT-FALSE, continued from crc (start with OB_PROTO_CRC_INIT). */
uint16_t ob_crc16(uint16_t crc, const uint8_t *data, size_t length);

/* Receives a byte that arrived outside a frame (the text protocol, energyrunner.h). */
typedef void (*ob_frame_other_byte)(uint8_t byte);

/* Whether a frame of this type may carry this many payload bytes. Asked on the header,
 * before the payload is read: a length the link damaged is refused at once, instead of
 * holding the device in a frame until that many bytes have come. */
typedef int (*ob_frame_length_ok)(uint8_t type, uint16_t length);

/* Blocks until a frame arrives, passing every byte before the sync pair to other (may be
 * NULL: dropped); the payload goes to payload (capacity bytes). A length over capacity
 * or refused by length_ok (may be NULL: any) ends the frame with OB_FRAME_BAD_LENGTH;
 * its bytes are then scanned for the next sync pair. */
ob_frame_status ob_frame_receive(ob_frame_header *header, uint8_t *payload, size_t capacity,
                                 ob_frame_other_byte other, ob_frame_length_ok length_ok);

/* Writes one frame in pieces: begin, any number of appends totalling length bytes,
 * end. Lets a response be sent from several buffers without copying. */
typedef struct {
  uint16_t crc;
} ob_frame_writer;

void ob_frame_begin(ob_frame_writer *writer, uint8_t type, uint8_t seq, uint16_t length);
void ob_frame_append(ob_frame_writer *writer, const uint8_t *data, size_t length);
void ob_frame_end(ob_frame_writer *writer);

void ob_frame_send(uint8_t type, uint8_t seq, const uint8_t *payload, uint16_t length);
/* OB_PROTO_ERROR frame: code (OB_PROTO_ERR_*), then message. */
void ob_frame_send_error(uint8_t seq, uint8_t code, const char *message);

#ifdef __cplusplus
}
#endif

#endif /* OB_SERIAL_FRAMES_H */
