"""Pure planners of host configuration: file texts in, new file texts and commands out."""
