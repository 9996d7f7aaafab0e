"""Queue structures that admission and dispatch share: a keyed FIFO and a
keyed FIFO that knows its earliest deadline. Pure data, no actors."""
