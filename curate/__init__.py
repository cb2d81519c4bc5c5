"""Data curation: sources, instruction rewriting, edit masks, scores, selection, export (upstream of everything)."""
