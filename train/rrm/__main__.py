"""`python -m train.rrm ...` / `accelerate launch -m train.rrm ...`: the `editkit rrm` commands."""
from train.rrm.cli import app

app()
