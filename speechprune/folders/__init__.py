"""What lives on disk between commands, and what a model named on the command line is: the run
folder that ``prune`` writes and shrink, bench, analyze and eval read (``run``), the shrunk model
folder that ``shrink`` writes and everyone loads (``shrunk``), and the one reader of "stock
model, shrunk folder or prune run" (``target``). Each format's writer and reader sit side by
side, below the commands, so that no command imports another."""
