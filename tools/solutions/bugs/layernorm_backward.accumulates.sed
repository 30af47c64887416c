# Adds into dgamma and dbeta instead of overwriting them: right only if the caller cleared them.
s/dgamma\[c\] = (float)dg\[c\];/dgamma[c] += (float)dg[c];/
s/dbeta\[c\] = (float)db\[c\];/dbeta[c] += (float)db[c];/
