// A deliberately slow rule: quadratic in the number of "a" bytes.
rule slow
{
    strings:
        $a = "a"
    condition:
        for all i in (1..#a) : (for all j in (1..#a) : (@a[i] + @a[j] >= 0))
}
