"""
What every entry point of the project sets up first (train_net.py, demo.py, tools/*.py): the
process (glibc's allocator), the config checked before anything is built, and the logs.
"""
