"""What a person reads: test metrics from logits, diagnostics, figures and HTML/Markdown reports."""
