"""The cross-entropy atlas: every probability/logit cross-entropy call, in every framework, measured and trained."""
