"""Backend-specific pieces of keras_sing, each imported only on its backend.

The core (`keras_sing.sing`, `keras_sing.transforms`) uses `keras.ops` only;
what cannot be said that way lives here, one module per backend, and is
tested against the generic path.
"""
