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

/* The boot banner's last line (without "\r\n"). mcu_onebit/serial_link.py reads this define:
 * among the bytes between frames, it tells the host that the board restarted. */
#define OB_ER_BOOT_DONE "m-init-done"
/* The last line of every reply: hosts read up to it (mcu_onebit/emulator.py too). */
#define OB_ER_READY "m-ready"

/* Longest command kept, '%' excluded. MLPerf Tiny's runner sends at most 31 bytes of hex
 * per `db` command (65 characters); EEMBC's parser keeps 80. */
#define OB_ER_LINE_MAX 80

/* Counts (db load N, infer N W) have at most this many decimal digits: up to 999,999,999.
 * A long infer is no trap: a printable byte from the host stops it between inferences. */
#define OB_ER_COUNT_DIGITS 9

/* Starts the text protocol and, when a host is attached (ob_hal_host_attached), prints the
 * boot banner. The banner has no "m-ready": that line ends the reply to a command, and a
 * host that finds the banner waiting must not take it for the reply to its first one. The
 * db bytes and the inference output live in buffer (the app's request buffer, capacity
 * bytes): the input at offset 0, the output right after the model's input. */
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
