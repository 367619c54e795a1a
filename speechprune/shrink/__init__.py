"""`speechprune shrink`: a run folder in, a smaller model folder out. ``job.shrink_run`` is the
entry point; ``slicing`` cuts the student's weights to the kept structures and checks the cut
against the masked model; ``card`` writes the model card."""
