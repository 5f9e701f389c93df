/* The EEMBC EnergyRunner / MLPerf Tiny device-under-test text protocol (docs/energyrunner.md),
 * beside the binary frames (serial_frames.h): bytes that arrive outside a frame come here,
 * one at a time. Commands are printable ASCII ended by '%' (`name%`, `db load N%`,
 * `db <hex>%`, `infer N W%`, `results%`, ...); every reply line ends in "\r\n" and every
 * command is answered with a last line "m-ready". */
#ifndef OB_ENERGYRUNNER_H
#define OB_ENERGYRUNNER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest command kept, '%' excluded. MLPerf Tiny's runner sends at most 31 bytes of hex
 * per `db` command (65 characters); EEMBC's parser keeps 80. */
#define OB_ER_LINE_MAX 80

/* Starts the text protocol and prints the boot banner. The db bytes and the inference
 * output live in buffer (the app's request buffer, capacity bytes): the input at offset 0,
 * the output right after the model's input. */
void ob_er_begin(uint8_t *buffer, size_t capacity);

/* One byte received outside a binary frame. Runs the command when it is the '%'. */
void ob_er_byte(uint8_t byte);

/* A binary frame arrived: it reused the buffer, so the loaded db bytes and the last
 * results are gone, and a half-received command line is dropped. */
void ob_er_frame_seen(void);

#ifdef __cplusplus
}
#endif

#endif /* OB_ENERGYRUNNER_H */
