// A syntax error on line 4.
rule broken
{
    condition: $undefined_string and
}
