"""The command line: `w2s` commands, plugin installs and the paid-work confirmation."""
