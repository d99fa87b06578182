"""The `tether` command line: one module per subcommand (`tether.commands.shell` is
`tether shell`), the entry point (`main`) and the composition root (`up`)."""
