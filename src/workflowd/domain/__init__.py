"""Pure domain types: frozen dataclasses, enums and state-transition tables. Imports nothing of
ours but itself."""
