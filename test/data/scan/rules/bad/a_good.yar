// Compiles: the error is in the next file.
rule good { strings: $a = "GOOD" condition: $a }
