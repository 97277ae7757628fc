// include is refused: every file is compiled on its own.
include "other.yar"
rule main_rule { condition: true }
