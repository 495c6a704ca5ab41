"""libcst transforms, one job each: head copies and package exports."""
