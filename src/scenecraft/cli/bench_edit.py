"""``scenecraft bench edit``: the toy-world edit suite (being built)."""
