"""The report's choices, importable without pandas or matplotlib (the CLI builds its parser from them)."""

# The metric a condition cell is scored by. "best" is the paper's (best test accuracy over the epochs
# after evaluate.best_after_epoch, as upstream `eval/<dataset>/train.py` reports it); "final" needs no
# look at the test set.
METRICS = {"final": "final_test_acc", "best": "best_test_acc"}

FORMATS = ("md", "csv", "tex", "png", "pdf")
