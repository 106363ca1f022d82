"""
Small shared helpers: comparing detections as sets, timing and memory measurement, the
allocator settings of the project's own processes.
"""
