"""napari plugin: a reader for results folders and stacks, and thin widgets over the library.

Install with the ``napari`` extra; ``tomomech view RESULTS_DIR`` opens it.
"""
