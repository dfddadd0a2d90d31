"""web layer: the page an operator keeps open, served on the daemon's HTTP listener."""
