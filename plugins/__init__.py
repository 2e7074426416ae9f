"""Built-in w2s plugins; each module is registered through the `w2s` entry-point group."""
