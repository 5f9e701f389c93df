/* The serial protocol between host (mcu_onebit/serial_link.py) and device. Specification:
 * docs/serial_protocol.md. These constants are read by Python too (mcu_onebit/cheader.py).
 *
 * Frame: SYNC0 SYNC1 type:u8 seq:u8 length:u16le payload[length] crc:u16le
 * crc = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over type..payload. */
#ifndef OB_PROTOCOL_H
#define OB_PROTOCOL_H

#define OB_PROTO_VERSION 2
#define OB_PROTO_SYNC0 0xA5
#define OB_PROTO_SYNC1 0x5A
#define OB_PROTO_HEADER_BYTES 6
#define OB_PROTO_CRC_BYTES 2
#define OB_PROTO_CRC_INIT 0xFFFF

/* Requests (host -> device); a response has the request type | OB_PROTO_RESPONSE and
 * echoes its seq. */
#define OB_PROTO_IDENTIFY 0x01 /* payload empty, or offset:u16le count:u16le; response: the UTF-8 JSON
                                  * object, or its bytes [offset, offset + count) clipped to its end */
#define OB_PROTO_IDENTIFY_QUERY_BYTES 4 /* the offset:u16le count:u16le payload */
#define OB_PROTO_IDENTIFY_SLICE 48 /* bytes per IDENTIFY slice the host asks for: a short frame
                                   * survives a noisy link far more often than the whole object */
#define OB_PROTO_IDENTITY_FIXED_MAX 320 /* the identity object's bytes besides the model's own
                                        * identity JSON, at most (keys, board id, five numbers,
                                        * counter unit): what a receive buffer sized for one model
                                        * (OB_APP_MAX_PAYLOAD, set by `convert`) adds for IDENTIFY */
#define OB_PROTO_INFER 0x02    /* payload: input tensor bytes; response: count:u64le, output bytes */
#define OB_PROTO_RESPONSE 0x80
#define OB_PROTO_ERROR 0x7F    /* response payload: code:u8, UTF-8 message */

/* Error codes in an OB_PROTO_ERROR payload. */
#define OB_PROTO_ERR_CRC 1
#define OB_PROTO_ERR_LENGTH 2
#define OB_PROTO_ERR_UNKNOWN_TYPE 3
#define OB_PROTO_ERR_INVOKE 4

#endif /* OB_PROTOCOL_H */
