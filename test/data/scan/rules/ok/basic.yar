// Test rules for test_scan_engine: plain strings, tags, metadata and severity.
rule plain_marker : malware test
{
    meta:
        description = "plain marker"
        severity = "critical"
        version = 3
        enabled = true
    strings:
        $a = "MAMORI-TEST-MARKER"
    condition:
        $a
}

rule sev_numeric { meta: severity = 1 strings: $a = "SEV-NUMERIC" condition: $a }
rule sev_bogus_score { meta: severity = "urgent" score = 85 strings: $a = "SEV-BOGUS" condition: $a }
rule score_45 { meta: score = 45 strings: $a = "SCORE-45" condition: $a }
rule score_string { meta: score = "65" strings: $a = "SCORE-STR" condition: $a }
rule score_10 { meta: score = 10 strings: $a = "SCORE-10" condition: $a }
rule no_meta { strings: $a = "NO-META" condition: $a }
rule sev_upper { meta: severity = "Medium" score = 99 strings: $a = "SEV-UPPER" condition: $a }
private rule hidden { strings: $a = "HIDDEN" condition: $a }
rule uses_hidden { condition: hidden }
