"""``scenecraft edit``: an instruction applied to a picture, its history kept in the PNG (being built)."""
