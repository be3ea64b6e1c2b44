"""mmsim: the command-line front of the OSv memory simulator."""
