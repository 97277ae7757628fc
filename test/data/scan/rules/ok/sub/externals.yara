// Test rules for test_scan_engine: the agent's external variables.
rule ext_all
{
    condition:
        filename == "evil.exe" and extension == "exe" and filetype == "pe" and
        owner contains "taro" and filepath endswith "evil.exe"
}
rule empty_file { condition: filesize == 0 }
