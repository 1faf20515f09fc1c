--[[ job_submit.lua for the bridge gateway (slurm_plugins/, docs/slurm-plugins.md).

A job whose comment starts with a gateway's job tag prefix claims to be one of that gateway's sessions. The
gateway signs its tags: "<prefix><session id>.<sig>", where sig is the first 32 hex digits of
HMAC-SHA256(the gateway's notify secret, "bridge-tag\n" .. "<prefix><session id>" .. "\n" .. <user name>).
- A tag that checks: the job's admin comment becomes "bridge session <session id>" (what `sacct -o
  AdminComment` shows admins; users cannot set or change it).
- A tag that does not (no signature, a wrong one, another user's): the job is refused with a message.
- Any other job passes untouched.
The gateways are those registered in /etc/slurm/bridge-notify.d/*.json (prefix and secret, readable by
SlurmUser alone), read again at most every 10 s, and at once when a tag names no known prefix.

Lua 5.1, as Debian's slurmctld embeds it: no bit operators, so SHA-256 works on 32-bit words held in
numbers, with byte tables for xor and and (built once when slurmctld loads this script).
]]

local NOTIFY_DIR = os.getenv("BRIDGE_NOTIFY_DIR") or "/etc/slurm/bridge-notify.d"
local REFRESH_S = 10
local MOD = 4294967296

local XOR8, AND8 = {}, {}
for a = 0, 255 do
  local xr, ar = {}, {}
  for b = 0, 255 do
    local x, y, rx, ra, bit = a, b, 0, 0, 1
    for _ = 1, 8 do
      local p, q = x % 2, y % 2
      if p ~= q then rx = rx + bit elseif p == 1 then ra = ra + bit end
      x, y, bit = (x - p) / 2, (y - q) / 2, bit * 2
    end
    xr[b], ar[b] = rx, ra
  end
  XOR8[a], AND8[a] = xr, ar
end

local function bitop(t, a, b)
  local r, m = 0, 1
  for _ = 1, 4 do
    local x, y = a % 256, b % 256
    r = r + t[x][y] * m
    a, b, m = (a - x) / 256, (b - y) / 256, m * 256
  end
  return r
end
local function bxor(a, b) return bitop(XOR8, a, b) end
local function band(a, b) return bitop(AND8, a, b) end
local function bnot(a) return MOD - 1 - a end
local P2 = {}
for i = 0, 32 do P2[i] = 2 ^ i end
local function rrot(x, n) local low = x % P2[n]; return (x - low) / P2[n] + low * P2[32 - n] end
local function rshift(x, n) return (x - x % P2[n]) / P2[n] end

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
local H0 = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

local function sha256(msg)
  local len = #msg
  msg = msg .. "\128" .. string.rep("\0", (55 - len) % 64)
  local bits = len * 8
  local tail = {}
  for i = 8, 1, -1 do tail[i] = string.char(bits % 256); bits = (bits - bits % 256) / 256 end
  msg = msg .. table.concat(tail)
  local h = {H0[1], H0[2], H0[3], H0[4], H0[5], H0[6], H0[7], H0[8]}
  local w = {}
  for chunk = 1, #msg, 64 do
    for i = 0, 15 do
      local a, b, c, d = msg:byte(chunk + i * 4, chunk + i * 4 + 3)
      w[i] = ((a * 256 + b) * 256 + c) * 256 + d
    end
    for i = 16, 63 do
      local v, u = w[i - 15], w[i - 2]
      local s0 = bxor(bxor(rrot(v, 7), rrot(v, 18)), rshift(v, 3))
      local s1 = bxor(bxor(rrot(u, 17), rrot(u, 19)), rshift(u, 10))
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) % MOD
    end
    local a, b, c, d, e, f, g, hh = h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    for i = 0, 63 do
      local S1 = bxor(bxor(rrot(e, 6), rrot(e, 11)), rrot(e, 25))
      local ch = bxor(band(e, f), band(bnot(e), g))
      local t1 = (hh + S1 + ch + K[i + 1] + w[i]) % MOD
      local S0 = bxor(bxor(rrot(a, 2), rrot(a, 13)), rrot(a, 22))
      local maj = bxor(bxor(band(a, b), band(a, c)), band(b, c))
      local t2 = (S0 + maj) % MOD
      hh, g, f, e, d, c, b, a = g, f, e, (d + t1) % MOD, c, b, a, (t1 + t2) % MOD
    end
    h[1], h[2], h[3], h[4] = (h[1] + a) % MOD, (h[2] + b) % MOD, (h[3] + c) % MOD, (h[4] + d) % MOD
    h[5], h[6], h[7], h[8] = (h[5] + e) % MOD, (h[6] + f) % MOD, (h[7] + g) % MOD, (h[8] + hh) % MOD
  end
  local out = {}
  for i = 1, 8 do
    local v = h[i]
    for j = 4, 1, -1 do out[(i - 1) * 4 + j] = string.char(v % 256); v = (v - v % 256) / 256 end
  end
  return table.concat(out)
end

local function hmac_sha256(key, msg)
  if #key > 64 then key = sha256(key) end
  key = key .. string.rep("\0", 64 - #key)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local k = key:byte(i)
    ipad[i], opad[i] = string.char(bxor(k, 0x36)), string.char(bxor(k, 0x5c))
  end
  return sha256(table.concat(opad) .. sha256(table.concat(ipad) .. msg))
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- the gateways, as registered for notices: {prefix, secret}
local gateways, read_at = {}, -REFRESH_S

local function read_gateways()
  local found = {}
  local names = io.popen("ls -1 '" .. NOTIFY_DIR:gsub("'", "") .. "' 2>/dev/null")
  if names == nil then   -- cannot look: keep what was known (failing open would let forged tags through)
    read_at = os.time()
    return
  end
  do
    for name in names:lines() do
      if name:match("^[%w%._%-]+%.json$") then
        local f = io.open(NOTIFY_DIR .. "/" .. name)
        if f then
          local text = f:read("*a")
          f:close()
          local prefix = text:match('"prefix"%s*:%s*"([^"]*)"')
          local secret = text:match('"secret"%s*:%s*"([^"]*)"')
          if prefix and prefix ~= "" and secret and secret ~= "" then
            found[#found + 1] = {prefix = prefix, secret = secret}
          end
        end
      end
    end
    names:close()
  end
  gateways, read_at = found, os.time()
end

local function claimed(comment)   -- the gateway whose prefix the comment starts with (the longest one)
  local best = nil
  for _, g in ipairs(gateways) do
    if comment:sub(1, #g.prefix) == g.prefix and (best == nil or #g.prefix > #best.prefix) then best = g end
  end
  return best
end

-- the comment split at its last "." into tag and signature, in linear time (nil, nil: no signature)
local function split_signed(comment)
  local dot = nil
  local at = comment:find(".", 1, true)
  while at do dot = at; at = comment:find(".", at + 1, true) end
  if dot == nil then return nil, nil end
  local sig = comment:sub(dot + 1)
  if #sig ~= 32 or sig:find("[^0-9a-f]") then return nil, nil end
  return comment:sub(1, dot - 1), sig
end

-- "ok", session id | "refused", reason | nil (not a gateway's tag)
function bridge_check(comment, user)
  if comment == nil or comment == "" or #comment > 1024 then return nil end
  if os.time() - read_at >= REFRESH_S then read_gateways() end
  local g = claimed(comment)
  local base, sig = split_signed(comment)
  if g == nil and base ~= nil and read_at < os.time() then
    read_gateways()   -- a signed tag of a gateway registered since the last read
    g = claimed(comment)
  end
  if g == nil then return nil end
  if base == nil or base:sub(1, #g.prefix) ~= g.prefix then
    return "refused", "this job's comment claims a bridge session but carries no signature"
  end
  local want = hex(hmac_sha256(g.secret, "bridge-tag\n" .. base .. "\n" .. (user or ""))):sub(1, 32)
  if sig ~= want then
    return "refused", "this job's comment claims a bridge session it does not belong to"
  end
  return "ok", base:sub(#g.prefix + 1)
end

bridge_hmac_hex = function(key, msg) return hex(hmac_sha256(key, msg)) end   -- for the tests

function slurm_job_submit(job_desc, part_list, submit_uid)
  local verdict, detail = bridge_check(job_desc.comment, job_desc.user_name)
  if verdict == "refused" then
    slurm.log_info("bridge: refused a job of uid %d: %s", submit_uid, detail)
    slurm.log_user("bridge: %s; sessions are submitted through the gateway", detail)
    return slurm.ERROR
  elseif verdict == "ok" then
    job_desc.admin_comment = "bridge session " .. detail
  end
  return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  if job_desc.comment ~= nil then   -- a tag is set at submission only
    local verdict = bridge_check(job_desc.comment, job_rec.user_name)
    if verdict ~= nil then
      slurm.log_user("bridge: a job's comment cannot be changed to a bridge session's tag")
      return slurm.ERROR
    end
  end
  return slurm.SUCCESS
end

if slurm ~= nil then slurm.log_info("bridge: job_submit.lua loaded") end
return slurm and slurm.SUCCESS or 0
