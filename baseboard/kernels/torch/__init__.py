"""Plain-torch reference implementations of every op; always available, and the ground
truth the conformance kit tests every other implementation against."""
