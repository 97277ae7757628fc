/* Windows users and local IPC peers: whether a token is an administrator's,
 * who is at the other end of the agent's named pipe (from the client
 * process's own token, not from anything it says), and the pipe's DACL. */
#include "shared/platform.h"

#include <aclapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform/win32/win32.h"

/* ---- tokens ------------------------------------------------------------------ */

static BYTE self_sid_buf[SECURITY_MAX_SID_SIZE];
static PSID self_sid;
static INIT_ONCE self_once = INIT_ONCE_STATIC_INIT;

/* The token's user SID, copied into buf (SECURITY_MAX_SID_SIZE bytes). */
static bool token_user(HANDLE token, BYTE *buf)
{
    union {
        TOKEN_USER user;
        BYTE bytes[sizeof(TOKEN_USER) + SECURITY_MAX_SID_SIZE];
    } info;
    DWORD n = 0;
    return GetTokenInformation(token, TokenUser, &info, sizeof(info), &n) &&
           CopySid(SECURITY_MAX_SID_SIZE, buf, info.user.User.Sid);
}

static BOOL CALLBACK init_self(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    HANDLE token;
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token))
        return TRUE;
    if (token_user(token, self_sid_buf))
        self_sid = self_sid_buf;
    CloseHandle(token);
    return TRUE;
}

PSID mmr_win_self_sid(void)
{
    InitOnceExecuteOnce(&self_once, init_self, NULL, NULL);
    return self_sid;
}

static bool is_well_known(PSID sid, WELL_KNOWN_SID_TYPE type)
{
    BYTE buf[SECURITY_MAX_SID_SIZE];
    DWORD n = sizeof(buf);
    return CreateWellKnownSid(type, NULL, buf, &n) && EqualSid(sid, buf);
}

/* LocalSystem, or an elevated token in which Administrators is enabled. A
 * UAC-filtered token of an administrator holds the group "for deny only",
 * which CheckTokenMembership does not count. token needs TOKEN_QUERY and
 * TOKEN_DUPLICATE. */
static bool token_is_admin(HANDLE token, PSID user)
{
    if (is_well_known(user, WinLocalSystemSid))
        return true;
    TOKEN_ELEVATION elevation = {0};
    DWORD n = 0;
    if (!GetTokenInformation(token, TokenElevation, &elevation, sizeof(elevation), &n) ||
        !elevation.TokenIsElevated)
        return false;
    BYTE admins[SECURITY_MAX_SID_SIZE];
    n = sizeof(admins);
    HANDLE imp; /* CheckTokenMembership wants an impersonation token */
    BOOL member = FALSE;
    if (!CreateWellKnownSid(WinBuiltinAdministratorsSid, NULL, admins, &n) ||
        !DuplicateToken(token, SecurityIdentification, &imp))
        return false;
    if (!CheckTokenMembership(imp, admins, &member))
        member = FALSE;
    CloseHandle(imp);
    return member;
}

bool mmr_user_is_admin(void)
{
    HANDLE token;
    BYTE user[SECURITY_MAX_SID_SIZE];
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY | TOKEN_DUPLICATE, &token))
        return false;
    bool admin = token_user(token, user) && token_is_admin(token, user);
    CloseHandle(token);
    return admin;
}

/* ---- peers ------------------------------------------------------------------- */

/* The account name in UTF-8, cut at a character boundary to fit; the RID
 * when the SID has no name. */
static void account_name(PSID sid, uint32_t rid, char *out, size_t cap)
{
    wchar_t name[256], domain[256];
    DWORD nlen = 256, dlen = 256;
    SID_NAME_USE use;
    char *utf8 = NULL;
    if (LookupAccountSidW(NULL, sid, name, &nlen, domain, &dlen, &use))
        utf8 = mmr_utf8_from_w(name);
    if (!utf8) {
        snprintf(out, cap, "%lu", (unsigned long)rid);
        return;
    }
    size_t len = strlen(utf8);
    if (len >= cap) {
        len = cap - 1;
        while (len > 0 && ((unsigned char)utf8[len] & 0xC0) == 0x80)
            len--;
    }
    memcpy(out, utf8, len);
    out[len] = '\0';
    free(utf8);
}

/* Fills out from the token of process pid: who it runs as and whether it
 * administers us. MMR_EPERM when we may not read its token. */
static int identify_process(ULONG pid, const char *side, struct mmr_peer *out)
{
    /* The process's token says who it runs as and whether it is elevated;
     * nothing the other side sends is trusted for this. */
    HANDLE proc = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
    if (!proc)
        return mmr_win_err_set(GetLastError(), side);
    HANDLE token;
    BOOL ok = OpenProcessToken(proc, TOKEN_QUERY | TOKEN_DUPLICATE, &token);
    DWORD err = GetLastError();
    CloseHandle(proc);
    if (!ok)
        return mmr_win_err_set(err, side);
    BYTE user[SECURITY_MAX_SID_SIZE];
    if (!token_user(token, user)) {
        err = GetLastError();
        CloseHandle(token);
        return mmr_win_err_set(err, side);
    }

    memset(out, 0, sizeof(*out));
    out->pid = (int64_t)pid;
    out->uid = (uint32_t)*GetSidSubAuthority(user, *GetSidSubAuthorityCount(user) - 1u);
    /* Administrators and SYSTEM administer every agent; an agent that is not
     * a service (development, tests) is administered by the user it runs as. */
    PSID self = mmr_win_self_sid();
    out->admin = token_is_admin(token, user) || (self && EqualSid(user, self));
    CloseHandle(token);
    account_name(user, out->uid, out->name, sizeof(out->name));
    return 0;
}

int mmr_peer_identify(uv_pipe_t *pipe, struct mmr_peer *out)
{
    uv_os_fd_t h;
    if (uv_fileno((uv_handle_t *)pipe, &h) != 0)
        return mmr_err_set(MMR_EINVAL, "IPC connection has no handle");
    ULONG pid = 0;
    if (!GetNamedPipeClientProcessId(h, &pid))
        return mmr_win_err_set(GetLastError(), "cannot read the IPC client's process id");
    return identify_process(pid, "cannot read the IPC client's access token", out);
}

int mmr_peer_identify_server(uv_pipe_t *client, struct mmr_peer *out)
{
    uv_os_fd_t h;
    if (uv_fileno((uv_handle_t *)client, &h) != 0)
        return mmr_err_set(MMR_EINVAL, "IPC connection has no handle");
    ULONG pid = 0, session = 1;
    if (!GetNamedPipeServerProcessId(h, &pid))
        return mmr_win_err_set(GetLastError(), "cannot read the IPC server's process id");
    int rc = identify_process(pid, "cannot read the IPC server's access token", out);
    if (rc == 0 || rc != MMR_EPERM)
        return rc;
    /* An ordinary user may not read a service's token. Session 0 holds only
     * services, and only administrators install services: trust that. */
    if (!GetNamedPipeServerSessionId(h, &session) || session != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    out->pid = (int64_t)pid;
    out->admin = true;
    snprintf(out->name, sizeof(out->name), "a service");
    return 0;
}

/* ---- the pipe's DACL --------------------------------------------------------- */

/* Builds the pipe's ACL into acl (acl_len bytes). */
static bool pipe_acl(PACL acl, DWORD acl_len)
{
    BYTE network[SECURITY_MAX_SID_SIZE], system_sid[SECURITY_MAX_SID_SIZE],
        admins[SECURITY_MAX_SID_SIZE], users[SECURITY_MAX_SID_SIZE];
    DWORD n1 = sizeof(network), n2 = sizeof(system_sid), n3 = sizeof(admins), n4 = sizeof(users);
    PSID self = mmr_win_self_sid();
    return self && CreateWellKnownSid(WinNetworkSid, NULL, network, &n1) &&
           CreateWellKnownSid(WinLocalSystemSid, NULL, system_sid, &n2) &&
           CreateWellKnownSid(WinBuiltinAdministratorsSid, NULL, admins, &n3) &&
           CreateWellKnownSid(WinAuthenticatedUserSid, NULL, users, &n4) &&
           InitializeAcl(acl, acl_len, ACL_REVISION) &&
           /* Remote clients come in with NETWORK in their token: the pipe
            * is for this computer only (libuv does not create it with
            * PIPE_REJECT_REMOTE_CLIENTS). Denials come first. */
           AddAccessDeniedAce(acl, ACL_REVISION, FILE_ALL_ACCESS, network) &&
           AddAccessAllowedAce(acl, ACL_REVISION, FILE_ALL_ACCESS, system_sid) &&
           AddAccessAllowedAce(acl, ACL_REVISION, FILE_ALL_ACCESS, admins) &&
           AddAccessAllowedAce(acl, ACL_REVISION, FILE_ALL_ACCESS, self) &&
           /* Local users may connect, read and write (libuv's client opens
            * with GENERIC_READ | GENERIC_WRITE); admin verbs are checked per
            * request from the caller's token. */
           AddAccessAllowedAce(acl, ACL_REVISION, FILE_GENERIC_READ | FILE_GENERIC_WRITE, users);
}

int mmr_ipc_endpoint_open_to_all(uv_pipe_t *server)
{
    uv_os_fd_t h;
    if (uv_fileno((uv_handle_t *)server, &h) != 0)
        return mmr_err_set(MMR_EINVAL, "the IPC endpoint is not bound");
    /* Five entries, each at most a header, a mask and the largest SID. */
    DWORD acl_len = sizeof(ACL) + 5 * (sizeof(ACCESS_ALLOWED_ACE) + SECURITY_MAX_SID_SIZE);
    PACL acl = mmr_malloc(acl_len);
    int rc = 0;
    if (!pipe_acl(acl, acl_len)) {
        rc = mmr_win_err_set(GetLastError(), "cannot build the IPC endpoint's access list");
        goto out;
    }
    /* A pipe's security descriptor belongs to the pipe name, shared by all
     * its instances: setting it through one instance covers those libuv
     * creates later. Protected: the default DACL's "Everyone may read" goes. */
    DWORD err = SetSecurityInfo(h, SE_KERNEL_OBJECT,
                                DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                                NULL, NULL, acl, NULL);
    if (err != ERROR_SUCCESS)
        rc = mmr_win_err_set(err, "cannot set the IPC endpoint's access list");
out:
    free(acl);
    return rc;
}
