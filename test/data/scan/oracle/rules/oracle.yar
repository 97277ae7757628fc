// The correctness oracle's rules: every (rule, file) match the yara CLI
// reports on oracle/corpus must be reported by our engine too.
import "math"

rule text_marker { strings: $a = "EICAR-LIKE-MAMORI-MARKER" condition: $a }
rule nocase_marker { strings: $a = "invoice payload" nocase condition: $a }
rule wide_marker { strings: $a = "WideMarker" wide condition: $a }
rule hex_marker { strings: $h = { DE AD BE EF ?? 00 [2-4] CA FE } condition: $h }
rule regex_marker { strings: $r = /pass(word)?=[0-9a-f]{8}/ condition: $r }
rule mz_header { condition: filesize > 64 and uint16(0) == 0x5A4D }
rule two_of_three
{
    strings:
        $a = "alpha-token"
        $b = "beta-token"
        $c = "gamma-token"
    condition:
        2 of them
}
rule many_markers { strings: $a = "xyz" condition: #a >= 10 }
rule high_entropy { condition: filesize >= 4096 and math.entropy(0, filesize) > 7.5 }
rule small_file { condition: filesize < 16 }
rule never { condition: false }
