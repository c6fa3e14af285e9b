"""The plugins that ship with nfplug, registered through entry points like any third-party package."""
