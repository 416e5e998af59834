"""MXNet symbol graphs (`-symbol.json`) and NDArray parameter lists (`.params`)."""
