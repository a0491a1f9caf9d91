/* Reference harness for tests/data/ab_yolo_loss.npz (not built by the project or its tests).

   Links against AlexeyAB/darknet's own object files (commit 59596d7, src/yolo_layer.c,
   gaussian_yolo_layer.c, box.c, blas.c, activations.c, utils.c, list.c, dark_cuda.c compiled
   with gcc -O2 -I<src,include>, no GPU) and runs one forward_yolo_layer or
   forward_gaussian_yolo_layer with state.train=1.  stdin: gaussian batch w h n total classes
   max_boxes net_w net_h, mask[n], anchors[2*total], then iou_loss(enum) iou_normalizer
   obj_normalizer cls_normalizer max_delta(<0: FLT_MAX) label_smooth_eps scale_x_y
   objectness_smooth new_coords focal_loss iou_thresh iou_thresh_kind(enum) ignore_thresh
   truth_thresh show_details has_counters uc_normalizer [class multipliers].
   argv: input.f32 truth.f32 out.bin (output, delta, cost as float32). */
#include "darknet.h"
#include "yolo_layer.h"
#include "gaussian_yolo_layer.h"
#include <stdio.h>
#include <stdlib.h>
#include <float.h>
int64_t get_current_iteration(network net){ return 0; }
static float *readf(const char *p, int n){ float *a = calloc(n, sizeof(float)); FILE *f = fopen(p,"rb"); fread(a,sizeof(float),n,f); fclose(f); return a; }
int main(int argc, char **argv){
  int gauss, batch,w,h,n,total,classes,max_boxes,netw,neth;
  scanf("%d %d %d %d %d %d %d %d %d %d",&gauss,&batch,&w,&h,&n,&total,&classes,&max_boxes,&netw,&neth);
  int *mask = calloc(n,sizeof(int)); for(int i=0;i<n;i++) scanf("%d",&mask[i]);
  layer l = gauss ? make_gaussian_yolo_layer(batch,w,h,n,total,mask,classes,max_boxes) : make_yolo_layer(batch,w,h,n,total,mask,classes,max_boxes);
  for(int i=0;i<2*total;i++) scanf("%f",&l.biases[i]);
  int iou_loss, kind, cpc; float md;
  scanf("%d %f %f %f %f %f %f %d %d %d %f %d %f %f %d %d %f", &iou_loss,&l.iou_normalizer,&l.obj_normalizer,&l.cls_normalizer,&md,&l.label_smooth_eps,&l.scale_x_y,&l.objectness_smooth,&l.new_coords,&l.focal_loss,&l.iou_thresh,&kind,&l.ignore_thresh,&l.truth_thresh,&l.show_details,&cpc,&l.uc_normalizer);
  l.iou_loss = iou_loss; l.iou_thresh_kind = kind; l.max_delta = md < 0 ? FLT_MAX : md;
  if (cpc) { l.classes_multipliers = calloc(classes,sizeof(float)); for(int i=0;i<classes;i++) scanf("%f",&l.classes_multipliers[i]); }
  l.delta_normalizer = 1;
  network net = {0}; net.w = netw; net.h = neth; net.max_batches = 1000;
  int rb=0, tb=0; net.rewritten_bbox=&rb; net.total_bbox=&tb;
  float zero=0; net.delta_rolling_avg=&zero; net.delta_rolling_max=&zero; net.delta_rolling_std=&zero;
  network_state st = {0}; st.net = net; st.train = 1; st.index = 0;
  st.input = readf(argv[1], batch*l.outputs);
  st.truth = readf(argv[2], batch*l.truths);
  if (gauss) forward_gaussian_yolo_layer(l, st); else forward_yolo_layer(l, st);
  FILE *f = fopen(argv[3],"wb"); fwrite(l.output,sizeof(float),batch*l.outputs,f); fwrite(l.delta,sizeof(float),batch*l.outputs,f); fwrite(l.cost,sizeof(float),1,f); fclose(f);
  fprintf(stderr,"truths %d\n", l.truths);
  return 0;
}
