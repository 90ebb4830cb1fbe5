"""Tests of equivlib.md, one module per submodule."""
