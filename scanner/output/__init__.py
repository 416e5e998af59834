"""Report formatters: each turns a Report into text; none decides anything."""
