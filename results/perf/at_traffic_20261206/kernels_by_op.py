"""GPU time per step of a torch.profiler trace, by kernel and the operator that launched it (matrix products pooled as
GEMM): ``python3 kernels_by_op.py <trace.json.gz> <steps> [rows]``. Made the tables of README.md from
h100_call4/l8b_profile/ (and from the SmolLM2 traces of h100_call2, not kept: 3.2 MB)."""
import json,gzip,collections,sys
t=json.load(gzip.open(sys.argv[1])); steps=int(sys.argv[2])
E_=t['traceEvents']
rt={e['args'].get('correlation'):e for e in E_ if e.get('cat') in ('cuda_runtime','cuda_driver') and 'args' in e}
ops=collections.defaultdict(list)
for e in E_:
    if e.get('cat')=='cpu_op': ops[e['tid']].append(e)
tot=collections.Counter(); cnt=collections.Counter(); alls=0
ks=[e for e in E_ if e.get('cat')=='kernel']
for k in ks:
    alls+=k['dur']
    name=k['name']
    if name.startswith('nvjet') or 'gemm' in name.lower() or 'cutlass' in name.lower():
        key='GEMM'
    else:
        r=rt.get(k['args']['correlation'])
        enc=[o for o in ops[r['tid']] if o['ts']<=r['ts']<=o['ts']+o['dur']] if r else []
        key=' > '.join(o['name'][:35] for o in enc[-2:])+' :: '+name[:45]
    tot[key]+=k['dur']; cnt[key]+=1
ts=sorted(k['ts'] for k in ks); te=max(k['ts']+k['dur'] for k in ks)
print(f"kernels {alls/steps/1e3:.1f} ms/step; span {(te-ts[0])/steps/1e3:.1f} ms/step")
for k,v in tot.most_common(int(sys.argv[3]) if len(sys.argv)>3 else 30): print(f"{v/steps/1e3:8.3f} {cnt[k]//steps:4d} {k}")
