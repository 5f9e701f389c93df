"""mcu-onebit: 1-bit-per-weight CNNs on microcontrollers.

Pipeline: train (mcu_onebit.train) -> convert (mcu_onebit.converters) -> firmware/
-> boards/ -> flash (mcu_onebit.flash) -> eval (mcu_onebit.evaluate).
"""

__version__ = "0.1.0"
