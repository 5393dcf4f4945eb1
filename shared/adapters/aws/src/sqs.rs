pub struct SqsQueue;
