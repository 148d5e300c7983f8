#!/usr/bin/env python3
# Usage: python3 tools/map_chemhist_check.py DATASET.h5 N  (needs numpy, h5py; not used by tests)
# Independent pure-Python re-implementation of the chemhist histograms (from the description),
# compared with beamwatch's /composition rows in a featurised dataset.
import csv, math, re, sys
import h5py, numpy as np
D = "/work/shared/data/chemhist/"
rows = list(csv.DictReader(open(D + "def_elem_property.csv")))
props = ["AN","EN","MP","PN","PG","MN","AW","AR","IR","CoR","CrR","spdf"]
def num(v):
    return None if v == "nodata" else float(v.strip("[]"))
table = {r["element_symbol"]: {p: num(r[p]) for p in props} for r in rows}
st = {r["item"]: r for r in csv.DictReader(open(D + "def_hist_settings.csv"))}
def setting(p):
    c = p + "_his" if p + "_his" in st["min"] else p
    return float(st["min"][c]), float(st["max"][c]), int(float(st["bin"][c])), float(st["sigma"][c])
def hist(vals, mn, mx, bins, sig):
    h = [0.0]*bins
    for v, w in vals:
        for i in range(bins):
            lo = (mx-mn)/bins*i+mn; hi = (mx-mn)/bins*(i+1)+mn
            if v >= lo and v < hi: h[i] += abs(w)
    if sig > 0:
        e = [(mx-mn)/bins*i+mn for i in range(bins)]
        out = []
        for x in range(bins):
            s = sum(h[i]/math.sqrt(2*math.pi*sig**2)*math.exp(-(e[i]-e[x])**2/(2*sig**2))*(e[i]-e[i-1]) for i in range(1, bins))
            out.append(0.0 if abs(s) < 1e-6 else s)
        return out
    return h
def parse(f):  # flat formulas only (what the check uses)
    amounts = {}
    for el, n in re.findall(r"([A-Z][a-z]?)([0-9.]*)", f):
        amounts[el] = amounts.get(el, 0) + (float(n) if n else 1.0)
    return amounts
def descriptor(f):
    a = parse(f); tot = sum(a.values()); els = sorted(a); x = {e: a[e]/tot for e in els}
    single, prod, diff = [], [], []
    for p in props:
        mn, mx, bins, sig = setting(p)
        P = lambda e: table[e][p]
        single += hist([(P(e) or 0.0, x[e]) for e in els], mn, mx, bins, sig)
        pv, dv = [], []
        for i in range(len(els)):
            for j in range(i+1, len(els)):
                e1, e2 = els[i], els[j]
                l = lambda v: math.log(v) if v is not None else 0.0
                pv.append((l(P(e1)) + l(P(e2)), x[e1]+x[e2]))
                dv.append((abs((P(e1) or 0.0) - (P(e2) or 0.0)), x[e1]+x[e2]))
        L = math.log(mx)
        prod += hist(pv, -0.2*L, 2*L, bins, 2*L/bins)
        diff += hist(dv, mn, mx, bins, sig)
    return np.array(single + prod + diff)
f = h5py.File(sys.argv[1])
ids = [s.decode() for s in f["ids"][:]]; forms = [s.decode() for s in f["formulas"][:]]
comp = f["composition"][:]
worst = 0.0; n = 0
for i, fo in enumerate(forms):
    if "(" in fo or "[" in fo or " " in fo.strip() or "*" in fo: continue
    if n >= int(sys.argv[2]): break
    d = descriptor(fo.strip()); n += 1
    err = np.abs(d - comp[i]).max(); worst = max(worst, err)
    print(f"{ids[i]} {fo.strip():28s} dims {len(d)}  max |python - rust| = {err:.2e}  (max value {d.max():.3f})")
print(f"{n} formulas, worst difference {worst:.2e} (rust stores f32)")
