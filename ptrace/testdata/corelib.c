// The library the dlopen test loads and unloads: one function with a
// boostable first instruction (push %rbx).
unsigned long lib_fn(unsigned long);

__asm__(".text\n"
        ".globl lib_fn\n.type lib_fn,@function\nlib_fn:\n"
        "\tpush %rbx\n\tlea 7(%rdi),%rax\n\tpop %rbx\n\tret\n");
