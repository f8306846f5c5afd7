package lockdebug

// pageHTML is the debug page: two tables, no scripts, a meta refresh.
const pageHTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{{.RefreshSeconds}}">
<title>fencedlock: locks of this process</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fde2e2}.muted{color:#777}
</style></head><body>
<h1>Locks held and awaited</h1>
<p class="muted">backend {{.Backend}} · taken {{.Taken.Format "15:04:05.000 MST"}} · refreshes every {{.RefreshSeconds}} s · <a href="?format=json">JSON</a></p>
<h2>Held ({{len .Held}})</h2>
<table id="held">
<thead><tr><th>key</th><th>name</th><th>fence</th><th>owner</th><th>held for ms</th><th>lease ms</th><th>deadline in ms</th><th>renewals</th><th>auto-refresh</th><th>hand-off</th></tr></thead>
<tbody>{{range .Held}}<tr{{if le .RemainingMS 0}} class="warn"{{end}}><td>{{.Key}}</td><td>{{.Name}}</td><td class="n">{{.Fence}}</td><td><code>{{.Owner}}</code></td><td class="n">{{.HeldForMS}}</td><td class="n">{{.TTLMS}}</td><td class="n">{{.RemainingMS}}</td><td class="n">{{.Renewals}}</td><td>{{.AutoRefresh}}</td><td>{{.Handoff}}</td></tr>
{{else}}<tr><td colspan="10" class="muted">nothing held</td></tr>{{end}}</tbody>
</table>
<h2>Waiting ({{len .Waiting}})</h2>
<table id="waiting">
<thead><tr><th>backend key</th><th>local waiters</th><th>asking backend</th><th>held here</th><th>hand-offs</th><th>parked (shared, permits)</th></tr></thead>
<tbody>{{range .Waiting}}<tr><td><code>{{.BackendKey}}</code></td><td class="n">{{.Waiters}}</td><td>{{.Contending}}</td><td>{{.Held}}</td><td class="n">{{.Handoffs}}</td><td class="n">{{.Parked}}</td></tr>
{{else}}<tr><td colspan="6" class="muted">no waiters</td></tr>{{end}}</tbody>
</table>
</body></html>
`
