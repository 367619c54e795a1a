"""The pieces of `speechprune analyze`: per-head statistics (``heads``) and the optional
matplotlib figure (``plot``). ``speechprune.analyze`` puts them together, with student-teacher
similarity from ``speechprune.model.compare``."""
