"""Graph work: Keras model -> int8 twin -> 1-bit TFLite graph -> generated C."""
