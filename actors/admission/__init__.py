"""Admission: concurrency groups (which builds may run) and job mutexes
(which jobs may run), with their FIFO queues, queue timeouts and retirement
when idle."""
