"""The pieces of `speechprune analyze`: per-head statistics (``heads``), student-teacher
similarity (``compare``) and the optional matplotlib figure (``plot``). ``speechprune.analyze``
puts them together."""
