"""Values and pure rules: names, versions, index configuration, permissions, inheritance order. No I/O."""
