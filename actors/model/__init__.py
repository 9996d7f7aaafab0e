"""The vocabulary every part shares: the pipeline spec, statuses and other
typed names, the result records clients read, the messages actors exchange,
errors and template rendering. Nothing here is an actor."""
